"""The local platform: every real forkcast component on 127.0.0.1 under one small supervisor, and the demo."""
