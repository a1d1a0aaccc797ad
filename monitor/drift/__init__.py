"""Online drift detectors. Each module holds one detector; all follow :class:`monitor.drift.base.Detector`."""
