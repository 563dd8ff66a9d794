"""The LLM proxy: Anthropic's Messages API behind the tenant's identity, model policy, routing, budgets and cost."""
