"""Per-word gaze features: what they are (``base``), where they come from (``reading_model``,
``transformer``, the paper's ``fmv1``/``fmv2`` with ``fmv_common``, ``recorded``), how a dataset gets
them (``featurize``) and how a tokenizer's sub-tokens get them back (``alignment``). Submodules are
imported directly, so importing one does not pull in torch or pymovements for the others."""
