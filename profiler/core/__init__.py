"""Leaf utilities and the vocabulary every floor shares: errors, units, results, redaction, the event loop, logging."""
