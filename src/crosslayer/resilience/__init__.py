"""Error resilience by fault and noise injection: fault models (pure tensor functions), targets
(weights in place, activations via hooks), fast batched campaigns and their statistics."""

from crosslayer.resilience.api import FaultConfig, FaultResult, fault_report, inject_faults
from crosslayer.resilience.batched import campaign_correct_counts, correct_counts, fault_correct_counts
from crosslayer.resilience.campaign import (
                                            CampaignResult,
                                            CellResult,
                                            FaultRecord,
                                            bit_sensitivity,
                                            evaluate_sites,
                                            rank_layers,
                                            sample_sites,
                                            statistical_campaign,
)
from crosslayer.resilience.faults import (
                                            FLOAT32,
                                            WordFormat,
                                            apply_word_mask,
                                            ber_masks,
                                            code_format,
                                            flip_bits,
                                            from_words,
                                            gaussian_noise,
                                            random_fault_sites,
                                            stuck_bits,
                                            to_words,
                                            uniform_noise,
)
from crosslayer.resilience.inject import LayerWeights, activation_hooks, fault_layers, patched_weights, stored_weights
from crosslayer.resilience.multi import TrialStats, activation_bitflips, ber_campaign, noise_campaign
from crosslayer.resilience.stats import leveugle_sample_size, mean_interval, wilson_interval

__all__ = ["FLOAT32", "CampaignResult", "CellResult", "FaultConfig", "FaultRecord", "FaultResult",
           "LayerWeights", "TrialStats", "WordFormat", "activation_bitflips", "activation_hooks",
           "apply_word_mask", "ber_campaign", "ber_masks", "bit_sensitivity", "campaign_correct_counts",
           "code_format", "correct_counts", "evaluate_sites", "fault_correct_counts", "fault_layers",
           "fault_report", "flip_bits", "from_words", "gaussian_noise", "inject_faults",
           "leveugle_sample_size", "mean_interval", "noise_campaign", "patched_weights",
           "random_fault_sites", "rank_layers", "sample_sites", "statistical_campaign", "stored_weights",
           "stuck_bits", "to_words", "uniform_noise", "wilson_interval"]
