"""ipywidgets panels. Each is a pure render function (tests and notebooks call it directly) and a few
lines of `Panel` subclass (labkit.widgets.base: controls -> render -> output); every panel's display
carries a static rendering of its default state. Seven panels (shift, padding, mask ratio, CE
temperature, reduction, DPO beta x sum/mean, scheduled sampling) also show what a tiny model learns
in each state (labkit.widgets.learned).

    base.py              Panel, FallbackBox (the display bundle with a static fallback, shared with labkit.predict)
    panels.py            the ten panels and their render_* functions
    learned.py           trained consequences: run_state, stored runs (data/panels/), LearnedView
    learned_finetune.py  the runs of the two fine-tuning panels (DPO from notebook 11's reference,
                         scheduled sampling from notebook 07's checkpoint)
"""
from labkit.widgets.base import FallbackBox, Panel, fallback_html  # noqa: F401
from labkit.widgets.learned import LearnedView, render_learned, run_state, stored_runs  # noqa: F401
from labkit.widgets.learned_finetune import DPO_BETAS, DPO_STATES, SS_ALPHA_MINS, SS_STATES  # noqa: F401
from labkit.widgets.panels import *  # noqa: F401,F403
from labkit.widgets.panels import (_demo_ss_example, _temperature_stats, CHAPTER_RECORD, CORRUPTION_RECORD,  # noqa: F401
                                   CORRUPTIONS, DEMO_CLASS_LOGITS, DEMO_CLASS_NAMES, DEMO_CLASS_TARGET, DEMO_SAME_MEANING,
                                   DEMO_SIMILARITIES, DPO_DEMO_PAIR, MIXTURE_DEMO_BUDGET, MIXTURE_DEMO_SOURCES,
                                   PADDING_PROMPTS, REDUCTION_LENGTHS, SHIFT_PLACES)
