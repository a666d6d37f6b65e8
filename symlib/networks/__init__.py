"""The networks that learn the game.

``models`` (GRU, LSTM, Transformer and their intervention sites), ``hooked`` (your own PyTorch
module, wrapped), ``hf`` (HuggingFace causal LMs, built from configs), ``training`` (train,
checkpoint, load or train by recipe) and ``batched`` (several seeds trained as one network).
Built on ``symlib.game``.
"""
