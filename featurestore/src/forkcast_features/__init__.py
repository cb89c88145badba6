"""forkcast online feature store on Redis: versioned keys, loader, warm cutover, live updates."""
