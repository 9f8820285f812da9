"""dg's defs folder: one `SyncComponent` instance per sync, each in `<sync>/defs.yaml`."""
