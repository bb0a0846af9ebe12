"""Trainers that fail on purpose, for the local backend's failure tests."""

from boss.trainers.digits import DigitsTrainer


class AlwaysFails(DigitsTrainer):
    def configure_model(self):
        raise RuntimeError("this trainer always fails")


class FailsOnAdamW(DigitsTrainer):
    def configure_model(self):
        if self.config.get("optimizer") == "adamw":
            raise RuntimeError("no adamw today")
        return super().configure_model()
