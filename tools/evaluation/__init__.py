"""Offline evaluation: metrics, warm / cold-item / cold-user protocols, reports."""
