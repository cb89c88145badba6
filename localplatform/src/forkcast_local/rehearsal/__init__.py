"""The canary rehearsal: Argo Rollouts' canary semantics, read from the rendered Rollout and AnalysisTemplates.

``spec`` reads the render (never a copy of the YAML), ``conditions`` evaluates the templates' expr conditions,
``replicas`` is Argo's basic-canary replica arithmetic, ``analysis`` an AnalysisRun and ``controller`` the Rollout's
steps, pauses, aborts and progress deadline. All of it is pure (time is passed in), so the semantics are unit-tested
without processes; ``runner`` drives it with real pods, a real gateway and a real Prometheus.
"""
