//! Decoding of the protobuf request bodies kubectl's typed commands send
//! (`kubectl create secret generic`, `kubectl create configmap`, `kubectl
//! create namespace`, `kubectl create serviceaccount` post
//! `application/vnd.kubernetes.protobuf`), for the kinds those commands
//! make; any other kind is refused with a 415 that says to send JSON.
//!
//! The wire format: the magic `k8s\0`, then a `runtime.Unknown` message
//! (1: TypeMeta {1: apiVersion, 2: kind}, 2: raw object bytes, 3:
//! contentEncoding, 4: contentType), whose raw bytes are the object's
//! message as in k8s.io/api's `generated.proto`.

use serde_json::{Map, Value, json};

use base64::Engine;

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

/// One field of a message: number and value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// The fields of a message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 => {
                pos += 8;
                Field::Varint(0)
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|e| e.to_string())?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len());
                let end = end.ok_or("truncated length-delimited field")?;
                let b = &buf[pos..end];
                pos = end;
                Field::Bytes(b)
            }
            5 => {
                pos += 4;
                Field::Varint(0)
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        if pos > buf.len() {
            return Err("truncated field".into());
        }
        out.push((num, f));
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
}

/// A `map<string, string>` entry (1: key, 2: value); bytes values are
/// returned base64-encoded, as JSON carries them.
fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), String> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = text(k)?,
            (2, Field::Bytes(v)) if bytes_value => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(v));
            }
            (2, Field::Bytes(v)) => value = json!(text(v)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(obj: &mut Map<String, Value>, field: &str, entry: (String, Value)) {
    if let Value::Object(m) = obj
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()))
    {
        m.insert(entry.0, entry.1);
    }
}

/// `ObjectMeta`: the fields a client sets on create.
fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => {
                m.insert("name".into(), json!(text(v)?));
            }
            (2, Field::Bytes(v)) => {
                m.insert("generateName".into(), json!(text(v)?));
            }
            (3, Field::Bytes(v)) => {
                m.insert("namespace".into(), json!(text(v)?));
            }
            (11, Field::Bytes(v)) => insert_entry(&mut m, "labels", map_entry(v, false)?),
            (12, Field::Bytes(v)) => insert_entry(&mut m, "annotations", map_entry(v, false)?),
            (14, Field::Bytes(v)) => {
                let list = m.entry("finalizers").or_insert_with(|| json!([]));
                if let Value::Array(a) = list {
                    a.push(json!(text(v)?));
                }
            }
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

/// Decodes one kind's message; `None` for kinds not decoded here.
fn object(api_version: &str, kind: &str, raw: &[u8]) -> Option<Result<Value, String>> {
    let decode = |raw: &[u8]| -> Result<Value, String> {
        let mut o = Map::new();
        o.insert("apiVersion".into(), json!(api_version));
        o.insert("kind".into(), json!(kind));
        for (n, f) in fields(raw)? {
            match (kind, n, f) {
                (_, 1, Field::Bytes(v)) => {
                    o.insert("metadata".into(), object_meta(v)?);
                }
                ("ConfigMap", 2, Field::Bytes(v)) => {
                    insert_entry(&mut o, "data", map_entry(v, false)?)
                }
                ("ConfigMap", 3, Field::Bytes(v)) => {
                    insert_entry(&mut o, "binaryData", map_entry(v, true)?);
                }
                ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                    o.insert("immutable".into(), json!(v != 0));
                }
                ("Secret", 2, Field::Bytes(v)) => insert_entry(&mut o, "data", map_entry(v, true)?),
                ("Secret", 3, Field::Bytes(v)) => {
                    o.insert("type".into(), json!(text(v)?));
                }
                ("Secret", 4, Field::Bytes(v)) => {
                    insert_entry(&mut o, "stringData", map_entry(v, false)?);
                }
                ("ServiceAccount", 4, Field::Varint(v)) => {
                    o.insert("automountServiceAccountToken".into(), json!(v != 0));
                }
                _ => {}
            }
        }
        Ok(Value::Object(o))
    };
    match (api_version, kind) {
        ("v1", "ConfigMap" | "Secret" | "Namespace" | "ServiceAccount") => Some(decode(raw)),
        _ => None,
    }
}

/// Decodes a protobuf request body into the JSON object it stands for.
/// `Err` names what could not be decoded (the caller answers 415 or 400).
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the Kubernetes protobuf magic k8s\\0")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm)? {
                    match (n, f) {
                        (1, Field::Bytes(v)) => api_version = text(v)?,
                        (2, Field::Bytes(v)) => kind = text(v)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    object(&api_version, &kind, raw).unwrap_or_else(|| {
        Err(format!(
            "the emulator decodes protobuf bodies only for v1 ConfigMap, Secret, Namespace and ServiceAccount, not {api_version} {kind}; send application/json"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from((num << 3) | 2).unwrap_or_default()];
        out.push(u8::try_from(bytes.len()).unwrap_or_default());
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_secret_as_kubectl_create_secret_sends_it() {
        let meta = [field(1, b"aws-credentials"), field(3, b"toil")].concat();
        let entry = [field(1, b"credentials"), field(2, b"[default]\n")].concat();
        let secret = [field(1, &meta), field(2, &entry)].concat();
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &secret)].concat();
        let v = decode(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["kind"], "Secret");
        assert_eq!(v["metadata"]["name"], "aws-credentials");
        assert_eq!(v["metadata"]["namespace"], "toil");
        assert_eq!(v["data"]["credentials"], "W2RlZmF1bHRdCg==");
        let job = [
            MAGIC.to_vec(),
            field(1, &[field(1, b"batch/v1"), field(2, b"Job")].concat()),
        ]
        .concat();
        assert!(decode(&job).is_err_and(|e| e.contains("batch/v1 Job")));
        assert!(decode(b"{}").is_err());
        assert!(decode(&[MAGIC, &[0x0a, 0x7f]].concat()).is_err());
    }
}
