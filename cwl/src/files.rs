//! File and Directory objects.

use serde_json::{Map, Value};

/// Calls `f` on every File and Directory object in `v`, outermost first,
/// including those in `secondaryFiles` and `listing`.
pub fn walk_mut(v: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(m) => {
            let class = m.get("class").and_then(Value::as_str);
            if matches!(class, Some("File") | Some("Directory")) {
                f(m);
                for key in ["secondaryFiles", "listing"] {
                    if let Some(Value::Array(items)) = m.get_mut(key) {
                        for item in items {
                            walk_mut(item, f);
                        }
                    }
                }
            } else {
                for (_, item) in m.iter_mut() {
                    walk_mut(item, f);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk_mut(item, f);
            }
        }
        _ => {}
    }
}
