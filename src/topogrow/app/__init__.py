"""The application: tasks and data, experiment runners, reports and plots, the CLI."""

from topogrow.app.datasets import load_california
from topogrow.app.experiment import ModelConfig, compare, run
from topogrow.app.task import Task
from topogrow.app.tasks import TASKS, make_task, register_task

__all__ = ["TASKS", "ModelConfig", "Task", "compare", "load_california", "make_task", "register_task", "run"]
