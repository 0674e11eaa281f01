"""Exports of a study: the best `vllm serve` command, tables, plots and reports."""
