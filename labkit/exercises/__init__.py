"""Exercise graders, one module per topic (`check_*(fn)` raise AssertionError naming the misconception).

Paradigm modules hold builders and objectives only; graders live here, above them (exercises import
paradigms, never the reverse). `common` holds the helpers every grader shares."""
