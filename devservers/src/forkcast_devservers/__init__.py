"""Real servers on 127.0.0.1, started and stopped one way for every caller (tests, drills, benchmarks, ``make up``).

Standard library only and below every other workspace member, so that any of them may use it. Modules:
``process`` (spawn/stop by PID + start time), ``ports`` (free loopback ports), ``ready`` (readiness waits and
probes), ``resp`` (the few Redis commands the probes need), ``binaries`` (where each server's program is, or which
package installs it), ``servers`` (redis-server standalone and Cluster, weed mini, mlflow server, prometheus,
alertmanager) and ``pytest_plugin`` (their fixtures).
"""
