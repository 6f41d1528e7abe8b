"""Pure judgement of measured figures: capacity, the gateable-metric catalogue, gates, significance,
comparison, requirements."""
