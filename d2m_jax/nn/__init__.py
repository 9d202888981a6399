"""Shared neural-network building blocks."""
from d2m_jax.nn.init import torch_bias_init, torch_kernel_init, TorchDense
from d2m_jax.nn.rnn import (GRU, LSTM, RNN_IMPLS, gru_reference_numpy, lstm_reference_numpy,
                            mixed_dot, resolve_impl)

__all__ = ["torch_bias_init", "torch_kernel_init", "TorchDense", "GRU", "LSTM",
           "gru_reference_numpy", "lstm_reference_numpy", "mixed_dot", "RNN_IMPLS",
           "resolve_impl"]
