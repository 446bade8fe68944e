"""Knowledge distillation: PointDistiller's local distillation and the baselines (FitNet, attention
transfer, response KD), composable on one interface, plus the teacher/student wrapper."""
