"""Parses a metrics exposition with the prometheus_client library's own
parsers and prints what they read, as JSON, for tests/tests/metrics.rs.

Usage: parse_metrics.py (prometheus|openmetrics) < exposition

`prometheus` reads the Prometheus text format 0.0.4
(prometheus_client.parser); `openmetrics` the OpenMetrics text format
1.0.0 (prometheus_client.openmetrics.parser, which refuses an exposition
without its `# EOF`). Output: {family: {"type": T, "unit": U, "samples":
[{"name": N, "labels": {...}, "value": V}, ...]}, ...}. A parse error exits
non-zero with the parser's message.
"""

import json
import math
import sys


def main():
    fmt = sys.argv[1] if len(sys.argv) > 1 else "prometheus"
    text = sys.stdin.read()
    if fmt == "openmetrics":
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    elif fmt == "prometheus":
        from prometheus_client.parser import text_string_to_metric_families
    else:
        sys.exit(f"unknown format {fmt!r}: give prometheus or openmetrics")
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name in out:
            sys.exit(f"family {fam.name} appears twice")
        out[fam.name] = {
            "type": fam.type,
            "unit": getattr(fam, "unit", ""),
            "samples": [
                {
                    "name": s.name,
                    "labels": s.labels,
                    # JSON has no infinity; no sample here should be one.
                    "value": None if math.isinf(s.value) else s.value,
                }
                for s in fam.samples
            ],
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
