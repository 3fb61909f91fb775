"""HIT pages: the instructions, the items and the five answers, as MTurk HTMLQuestion or a lab form.

The same body serves both: on MTurk it sits in a ``crowd-form`` (MTurk's own
submit button and answer collection); in the lab it is a plain form posted to
the local server. Inputs are native ``required`` radio buttons named ``q0``,
``q1``... by position; values are the score for robot A (2 = A clearly more
reasonable ... -2 = A clearly less reasonable). Images load by URL, and nothing
on the page (file names, alt text, field names) says which method is which.
"""

from __future__ import annotations

import html

from amt.study import Study

MAX_QUESTION_BYTES = 64 * 1024  # MTurk's limit on the Question parameter

# (value = score for robot A; the wording of the paper's Fig. 5 as the issue quotes it: each answer says which
# robot "seems" clearly or slightly more reasonable)
ANSWERS = (
    ("2", "Robot A seems clearly more reasonable than robot B"),
    ("1", "Robot A seems slightly more reasonable than robot B"),
    ("0", "Both robots seem equally reasonable"),
    ("-1", "Robot B seems slightly more reasonable than robot A"),
    ("-2", "Robot B seems clearly more reasonable than robot A"),
)
ANSWER_VALUES = tuple(value for value, _ in ANSWERS)
QUESTION = "Which robot is more reasonable?"  # the paper's Fig. 5 question, asked of every item

PROMPTS = {
    "overall_map": ("Both robots think the two images show the same {subject}. The bright, outlined regions (the "
                    "top {percent}% of each robot's map) show where each robot looked to decide. " + QUESTION),
    "retrieval": ("Both robots were asked to find images of the same {subject} as the region in the red box "
                  "of the query image (left). Which robot's results match the boxed region better?"),
}

STYLE = """
body{font-family:Arial,Helvetica,sans-serif;max-width:1100px;margin:0 auto;padding:8px;color:#222}
.item{border:1px solid #ccc;border-radius:6px;padding:10px;margin:14px 0}
.robot{margin:6px 0}.robot img{max-width:100%;height:auto;display:block}
.robot h3{margin:4px 0}.answers label{display:block;margin:3px 0;cursor:pointer}
.instructions{background:#f4f6f8;padding:10px;border-radius:6px}
"""


def page_body(study: Study, items: list[dict], image_url) -> str:
    """The instructions and items; ``image_url(file_name)`` gives each stimulus' URL."""
    prompt = html.escape(PROMPTS[study.kind].format(subject=study.subject,
                                                    percent=f"{study.highlight_fraction * 100:g}"))
    parts = [f'<div class="instructions"><p>{prompt}</p><p>Look at both robots carefully before answering. '
             f'Some questions check attention.</p></div>']
    for position, item in enumerate(items):
        name = f"q{position}"
        parts.append(f'<div class="item"><h2>Question {position + 1} of {len(items)}</h2>')
        for robot in ("A", "B"):
            url = html.escape(image_url(item["stimuli"][robot]), quote=True)
            parts.append(f'<div class="robot"><h3>Robot {robot}</h3>'
                         f'<img src="{url}" alt="Robot {robot}"></div>')
        if study.kind == "overall_map":
            parts.append(f"<p><b>{html.escape(QUESTION)}</b></p>")
        parts.append('<div class="answers">')
        for value, label in ANSWERS:
            parts.append(f'<label><input type="radio" name="{name}" value="{value}" required> '
                         f'{html.escape(label)}</label>')
        parts.append("</div></div>")
    return "\n".join(parts)


def mturk_html(study: Study, items: list[dict], image_url) -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><style>{STYLE}</style>'
            f'<script src="https://assets.crowd.aws/crowd-html-elements.js"></script></head><body>'
            f'<crowd-form answer-format="flatten-objects">{page_body(study, items, image_url)}</crowd-form>'
            f'</body></html>')


def lab_html(study: Study, items: list[dict], image_url, action: str, progress: str) -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Study</title><style>{STYLE}</style></head>'
            f'<body><p>{html.escape(progress)}</p><form method="post" action="{html.escape(action, quote=True)}">'
            f'{page_body(study, items, image_url)}<p><button type="submit" id="submit">Submit</button></p>'
            f'</form></body></html>')


def html_question(study: Study, items: list[dict], image_url) -> str:
    """The HTMLQuestion XML for CreateHIT; refuses pages over MTurk's 64 KB limit."""
    content = mturk_html(study, items, image_url)
    question = ('<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/'
                '2011-11-11/HTMLQuestion.xsd"><HTMLContent><![CDATA[' + content +
                ']]></HTMLContent><FrameHeight>0</FrameHeight></HTMLQuestion>')
    size = len(question.encode())
    if size > MAX_QUESTION_BYTES:
        from amt.study import StudyError

        raise StudyError(f"study {study.study_id}: a HIT page is {size} bytes, over MTurk's {MAX_QUESTION_BYTES}; "
                         f"lower items_per_hit")
    return question
