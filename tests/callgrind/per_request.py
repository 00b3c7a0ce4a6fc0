#!/usr/bin/env python3
# Per-request events of each callgrind dump of one Envoy process (files in dump order):
#   per_request.py hook cg.<pid>.*   per call of the module's get_headers_size (once per request)
#   per_request.py all  cg.<pid>.*   per call of libc's send (one per HTTP/1.1 response)
# Dumps that saw no request print "no data"; the first dumps hold start-up and warm-up.
import re
import sys

if len(sys.argv) < 3 or sys.argv[1] not in ("hook", "all"):
    sys.exit("usage: per_request.py hook|all <dumps in order>")
marker = "envoy_dynamic_module_callback_http_get_headers_size" if sys.argv[1] == "hook" else "send"
files = sorted(sys.argv[2:], key=lambda p: int(p.rsplit(".", 1)[-1]) if p.rsplit(".", 1)[-1].isdigit() else 0)
names = {}
for path in files:
    events, totals, calls, callee = None, None, 0, None
    for line in open(path):
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("summary:", "totals:")):
            totals = [int(x) for x in line.split()[1:]]
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2).strip()
            if line.startswith("cfn"):
                callee = names.get(m.group(1), "")
            continue
        if line.startswith("calls=") and callee == marker:
            calls += int(line.split("=")[1].split()[0])
    if not calls or not totals:
        print(path, "no data")
        continue
    per = " ".join(f"{e}={t / calls:.0f}" for e, t in zip(events, totals))
    print(path, calls, "requests;", per)
