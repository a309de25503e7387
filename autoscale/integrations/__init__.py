"""Adapters that let other trainers' scripts report to `autoscale.probe`."""
