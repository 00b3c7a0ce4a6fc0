#!/bin/sh
# Asks every process under callgrind for a dump every 2 s, until stopped: each dump then holds
# about 2 s of steady load, and per_request.py divides it by the requests it saw.
while true; do
  for pid in $(pgrep -f "valgrind.*callgrind"); do callgrind_control -d "$pid" >/dev/null 2>&1; done
  sleep 2
done
