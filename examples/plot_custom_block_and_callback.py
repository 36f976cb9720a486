"""
Extending topogrow: a custom block and a custom callback
========================================================

A **block** is any module :math:`g(x;\\theta)` that is zero at zero parameters; registered
under a name, the growth loop inserts it as :math:`x + g(x)` and finds its initialisation
through the matrix-free path (Hessian-vector products, Lanczos). A **callback** sees the loop
at fixed points (``on_fit_start``, ``on_epoch_end``, ``on_stage_end``, ``on_insert``,
``on_fit_end``); its ``state_dict`` goes into checkpoints, so it resumes with the run.
"""

# %%
# A block: :math:`g(x) = W_2 \tanh(W_1 x)`
# ----------------------------------------
# Zero when both matrices are zero, and so is its gradient in the parameters: the topological
# derivative is of second order, and its leading eigenvector sets :math:`W_1` and :math:`W_2`
# together. ``overwrite=True`` lets this script run twice in one process.
import matplotlib.pyplot as plt
import torch

from topogrow import Callback, Grower, GrowthConfig, ResidualMLP
from topogrow.nn import register_block


@register_block("tanh-mlp", overwrite=True)
def tanh_mlp(model, location):
    return torch.nn.Sequential(
        torch.nn.Linear(model.width, 8, bias=False), torch.nn.Tanh(), torch.nn.Linear(8, model.width, bias=False)
    )


# %%
# A callback that records every insertion
# ---------------------------------------
class InsertionLog(Callback):
    """Where each block went, its epsilon, and the predicted and measured change of the loss."""

    def __init__(self):
        self.rows = []

    def on_insert(self, grower, insertion):
        self.rows.append(
            {
                "location": insertion.location,
                "epsilon": insertion.epsilon,
                "predicted": insertion.predicted_change,
                "actual": insertion.actual_change,
            }
        )

    def state_dict(self):
        return {"rows": self.rows}

    def load_state_dict(self, state):
        self.rows = state["rows"]


# %%
# Grow by the new block
# ---------------------
g = torch.Generator().manual_seed(0)
X = torch.randn(1200, 4, generator=g)
y = torch.sin(2 * X[:, :1]) + X[:, 1:2] * X[:, 2:3]
train, val = (X[:1000], y[:1000]), (X[1000:], y[1000:])
torch.manual_seed(0)
model = ResidualMLP(4, width=16, depth=1, out_features=1)
log = InsertionLog()
config = GrowthConfig(strategy="td", block="tanh-mlp", max_depth=4, epochs_per_stage=8, final_epochs=8, seed=0)
history = Grower(model, "mse", config, callbacks=[log]).fit(train, val)
print(history.summary())
for row in log.rows:
    print(row)
print("the model's spec records the blocks:", model.spec()["blocks"])

# %%
fig, axis = plt.subplots(figsize=(6, 3.6))
predicted = [row["predicted"] for row in log.rows]
actual = [row["actual"] for row in log.rows]
axis.bar([i - 0.2 for i in range(len(log.rows))], predicted, width=0.4, label="predicted")
axis.bar([i + 0.2 for i in range(len(log.rows))], actual, width=0.4, label="measured")
axis.set_xticks(range(len(log.rows)), [f"location {row['location']}" for row in log.rows])
axis.set_ylabel("change of the training loss")
axis.set_title("each inserted tanh-mlp block")
axis.legend()
fig.tight_layout()
plt.show()
