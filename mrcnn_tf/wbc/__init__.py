"""The white-cell application: typing, morphometry, dataset presets, synthetic smears, the demo."""
