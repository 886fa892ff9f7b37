"""The CPU backend: process settings and opt-in convolution kernels, chosen once per process."""
