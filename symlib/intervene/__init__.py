"""Causal interventions: finding a variable in a network's states.

``alignment`` (the alignment functions: orthogonal, linear, revnet, boundless), ``iia`` (measuring
interchange intervention accuracy), ``search`` (the one training loop every search runs on, and
its stopping rule), ``das`` (Distributed Alignment Search on one network), ``mas`` (Model
Alignment Search across networks, and stitching), ``controls`` (searches that should fail),
``interventions`` (hand-made swaps) and ``store`` (searches cached by what made them).
Built on ``symlib.game`` and ``symlib.networks``.
"""
