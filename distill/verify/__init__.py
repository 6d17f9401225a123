"""The checks that the filter, the GRPO reward and evaluation share."""
