"""``-tr nnUNetTrainerFreeTumor`` and its ablations: learned tumor synthesis (Eq. 1) with the trained generator on
every healthy-organ crop, gated by the frozen baseline segmenter (Eq. 4-5).

The generator is ``$nnUNet_results/<dataset>/FreeTumorGenerator__<plans>__<configuration>/fold_<f>/
generator_final.safetensors`` (written by ``freetumor_train_generator``), or the file in ``nnUNet_freetumor_generator``.
"""

from nnunet_freetumor import env
from nnunet_freetumor.generator.checkpoint import (
    find_generator,
    generator_crop_rule,
    load_compatible_generator,
)
from nnunet_freetumor.generator.networks import synthesis_options
from nnunet_freetumor.synthesis.residual import generator_synthesis
from nnunet_freetumor.training.trainer_base import DeviceSynthesisTrainerBase


class nnUNetTrainerFreeTumor(DeviceSynthesisTrainerBase):
    def setup_synthesizer(self, results, pm, configuration, fold) -> None:
        where = {"dataset_name": pm.dataset_name, "plans": pm.plans_name, "configuration": configuration, "fold": fold}
        path = find_generator(
            results, **where, override=env.get(env.GENERATOR), alternatives=f" (or point {env.GENERATOR} to one)"
        )
        self.generator, meta = load_compatible_generator(path, self.freetumor_config, **where)
        self.generator_options = synthesis_options(meta["generator"])
        self.generator_crop_rule = generator_crop_rule(meta, self.freetumor_config)
        done = f"{meta['steps_done']} steps" if "steps_done" in meta else f"{meta.get('epochs_done')} epochs"
        self.generator_info = f"{path} ({done})"

    def crop_rule(self):
        return self.generator_crop_rule

    def move_synthesizer_to_device(self) -> None:
        self.generator.to(self.device)
        self.print_to_log_file(f"FreeTumor: generator {self.generator_info}")

    def synthesize_crops(self, x, soft, organ_index):
        return generator_synthesis(
            self.generator,
            x,
            soft,
            organ_index,
            self.normalizations[0],
            self.freetumor_config.window,
            **self.generator_options,
        )


class nnUNetTrainerFreeTumor_noGate(nnUNetTrainerFreeTumor):
    """Every synthetic tumor is used (no quality gate, no frozen segmenter needed)."""

    use_gate = False


class nnUNetTrainerFreeTumor_T05(nnUNetTrainerFreeTumor):
    config_overrides = {"gate_threshold": 0.5}


class nnUNetTrainerFreeTumor_T09(nnUNetTrainerFreeTumor):
    config_overrides = {"gate_threshold": 0.9}


class nnUNetTrainerFreeTumor_fullGate(nnUNetTrainerFreeTumor):
    """The gate judges the whole training patch instead of the tumor-centred crop (slower; see benchmarks/)."""

    config_overrides = {"gate_bbox_crop": False}
