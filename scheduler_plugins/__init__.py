"""The scheduler extender (``katalyst-scheduler-extender``): the HTTP service and
pure filter/score plugins."""
