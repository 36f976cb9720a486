"""Hooks of the gallery build (named by string in docs/conf.py, so the configuration pickles)."""


def one_thread(gallery_conf, fname, when):
    """Before each example: one torch thread. The tutorials' networks are small, and two threads
    on a shared 2-core machine run many times slower than one."""
    import torch

    torch.set_num_threads(1)
