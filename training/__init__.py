"""Two-tower retrieval and DLRM ranking: models, training loops, metrics and export."""
