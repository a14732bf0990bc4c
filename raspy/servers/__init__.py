"""Executives that offer services: core, fake devices, 1-Wire sensors."""
