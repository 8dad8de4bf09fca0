#!/usr/bin/env python3
"""Parse a metrics scrape with the Prometheus project's own Python parsers.

An independent reader of the exposition formats (PyPI `prometheus_client`,
the Prometheus project's Python library), so that the end-to-end tests check
what a real scraper reads, not what the Rust encoder meant to write.

Usage: parse_metrics.py prometheus|openmetrics < scrape

Output: exit 0 and one JSON object on stdout:
  {"families": [{"name", "type", "samples": [{"name", "labels", "value"}]}]}
A scrape the parser rejects exits 1 with {"error", "message"}; bad usage or
a missing package exits 2.
"""

import json
import sys


def parser_for(fmt):
    if fmt == "prometheus":
        from prometheus_client.parser import text_string_to_metric_families
    elif fmt == "openmetrics":
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        raise ValueError("usage: parse_metrics.py prometheus|openmetrics < scrape")
    return text_string_to_metric_families


def main(argv):
    try:
        if len(argv) != 2:
            raise ValueError("usage: parse_metrics.py prometheus|openmetrics < scrape")
        parse = parser_for(argv[1])
    except (ValueError, ImportError) as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        return 2
    text = sys.stdin.read()
    try:
        # The parsers are lazy: a malformed line raises while iterating.
        families = [
            {
                "name": f.name,
                "type": f.type,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples],
            }
            for f in parse(text)
        ]
    except Exception as e:  # noqa: BLE001 - any rejection is the answer
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        return 1
    print(json.dumps({"families": families}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
