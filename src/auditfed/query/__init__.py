"""Answers from the trail: the query language, correlation and compliance questions."""
