"""Bad inputs for the classroom tools (labkit.classroom, labkit.exercises.bughunt; merged into tests/bad_inputs.py
by the lead): each call raises ContractError."""
import tempfile
from pathlib import Path

from labkit.classroom.gradebook import grade_class, submissions
from labkit.classroom.build import build
from labkit.exercises.bughunt import check_hunt, student_seed, train_packed_pipeline

NAMESPACE = dict(globals())

CASES = [
    "build(Path(tempfile.mkdtemp()), fmt='pdf', force=True)",
    "build(Path(tempfile.mkdtemp()), source=Path(tempfile.mkdtemp()), force=True)",
    "submissions(Path(tempfile.mkdtemp()))",
    "grade_class(Path(tempfile.mkdtemp()), Path('/proc/no-such-dir/grades'), Path(tempfile.mkdtemp()))",
    "student_seed('')",
    "check_hunt(lambda b: b, 4, 'alice')",
    "train_packed_pipeline(lambda d: d, convention='maybe')",
]
