"""The system as Kubernetes sees it: overlays rendered by kustomize, and the checks that the render is wired."""
