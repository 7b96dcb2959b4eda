"""Readers for the real data sets the systems train and evaluate on."""
