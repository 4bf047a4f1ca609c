"""One driver module per corpus repository; ``common`` holds what they share, ``__main__`` runs one.

A driver defines two functions, each returning ``{name: tensor}``:

* ``reference(ctx)``: runs in a process that never imports ascend_patch; builds the small model with a
  fixed seed on the CPU in fp32 (or in the dtype the repository's own path uses), saves what the
  patched run needs with ``ctx.save`` and returns the reference outputs;
* ``patched(ctx)``: runs after ``ascend_patch.apply(device="sim")`` (or, with ``--baseline``, without it),
  loads what the reference saved and runs the repository's own CUDA-written path.

Optional module attributes: ``PATHS`` (folders of the checkout put on ``sys.path``, default the root),
``STAND_INS`` (packages that cannot be installed against this torch, replaced in both processes by
inert modules), ``TOL`` (the pass threshold when the repository's path is not fp32).
"""
