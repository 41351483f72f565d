"""Bad inputs for the classroom tools (labkit.classroom, labkit.exercises.bughunt; merged into tests/bad_inputs.py
by the lead): each call raises ContractError."""
import tempfile
from pathlib import Path

from labkit.classroom.gradebook import grade_class, submissions
from labkit.classroom.build import build
from labkit.exercises.bughunt import check_hunt, student_seed, train_packed_pipeline

FILES = Path(tempfile.mkdtemp(prefix="labkit-bad-classroom-"))   # shown as 'tmp' in README's table
for _name in ("out", "empty", "class", "notebooks", "handouts"):
    (FILES / _name).mkdir()

NAMESPACE = dict(globals())

CASES = [
    "build(FILES / 'out', fmt='pdf', force=True)",
    "build(FILES / 'handouts', source=FILES / 'empty', force=True)",
    "submissions(FILES / 'empty')",
    "grade_class(FILES / 'class', Path('/proc/no-such-dir/grades'), FILES / 'notebooks')",
    "student_seed('')",
    "check_hunt(lambda b: b, 4, 'alice')",
    "train_packed_pipeline(lambda d: d, convention='maybe')",
]
