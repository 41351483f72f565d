"""Classroom tools: handouts, grading that a submission cannot talk its way around, a class at once,
and an nbgrader export. The command line is `python -m labkit.assignments build|grade ...`.

- `handout`: instructor notebook -> student notebook (solutions blanked, hidden tests removed, no outputs).
- `inject`: what the grader runs in place of each CHECK cell (fresh checkers, reset kernel, plain values).
- `runtime`: the kernel-side code of those injected cells (executed from its source, never imported there).
- `grade`: one submission in a fresh temporary directory, judged by the kernel's execution status.
- `sandbox`: the kernel in a mount namespace that hides the instructor's files (when Linux allows it).
- `gradebook`: a folder of submissions in parallel processes -> gradebook CSV + one JSON report per student.
- `nbgrader_export`: an nbgrader source assignment (grade ids, points, checksums).
"""
