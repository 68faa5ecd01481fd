"""Running code and model files of AI Platform's years on today's Python and libraries."""
