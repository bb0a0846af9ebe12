"""Trainers for the dashboard's tests: slow enough that a browser sees a trial run, epoch by epoch."""

import json
import os
import time

from boss.trainers.digits import DigitsTrainer


class SlowDigits(DigitsTrainer):
    """args.epoch_seconds: a pause in each evaluation, so each epoch's line reaches the log apart;
    args.fail_trial: that trial fails with a message that holds HTML (the page must show it as text)."""

    def configure_model(self):
        if json.loads(os.environ["BOSS_TRIAL"])["index"] == int(self.args.get("fail_trial", -1)):
            raise RuntimeError("<b>fails on purpose</b> & <script>alert(1)</script>")
        return super().configure_model()

    def evaluate(self, model, loader, device):
        time.sleep(float(self.args.get("epoch_seconds", 0)))
        return super().evaluate(model, loader, device)
