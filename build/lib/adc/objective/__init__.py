"""What a search optimises and under what: budgets, rewards, the metrics record, the Evaluator."""
