"""What is kept in Redis: every key, the queue, histories, kept notifications, budgets, tag batches,
failures and counts."""
