"""The app's one Gradio component subclass: a Label whose headline is the thresholded verdict.

Alone in its file because Gradio's ComponentMeta writes a .pyi stub (a copy of the defining module) beside
any module that subclasses a component; this one's stub, fakeface/space/components.pyi, is git-ignored.
"""

from __future__ import annotations

import gradio as gr
from gradio.components.label import LabelConfidence, LabelData


class VerdictLabel(gr.Label):
    """A gr.Label that takes {"label": headline, "confidences": {class: prob}} and shows that headline.

    gr.Label's own postprocess heads with the most confident class; with a threshold other than 0.5 that is
    not the verdict (fake_prob 0.4 is FAKE at threshold 0.3). Any other value is gr.Label's as usual.
    """

    # A template of gr.Label (as gradio/templates.py does): the page draws it with Label's own frontend, instead
    # of looking for a custom component's JavaScript beside this file.
    is_template = True

    def postprocess(self, value):
        if isinstance(value, dict) and isinstance(value.get("confidences"), dict) and "label" in value:
            ranked = sorted(value["confidences"].items(), key=lambda kv: kv[1], reverse=True)
            return LabelData(label=value["label"],
                             confidences=[LabelConfidence(label=k, confidence=v) for k, v in ranked])
        return super().postprocess(value)

