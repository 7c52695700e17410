"""Ready DALI pipelines with multi-mix: arrays (CIFAR-style), image folders (ImageNet-style JPEG),
speech (WAV -> spectrogram); the datasets they read; sharding for data-parallel training."""
from .arrays import EpochSource, array_eval_pipeline, array_train_pipeline, channel_stats
from .datasets import (ArrayDataset, as_dataset, fashion_mnist, load_cifar, load_idx, load_npz,
                       read_idx)
from .folders import FileList, list_class_folder, read_file_list
from .image_folder import (default_device, find_undecodable_images, image_folder_train_pipeline,
                           image_folder_val_pipeline, list_image_folder)
from .sharding import shard_indices
from .speech import feature_shape, list_audio_folder, speech_commands_split, speech_train_pipeline
from .speech_data import synthesize_speech_commands

__all__ = [
    "EpochSource", "array_eval_pipeline", "array_train_pipeline", "channel_stats", "ArrayDataset",
    "as_dataset", "fashion_mnist", "load_cifar", "load_idx", "load_npz", "read_idx", "FileList",
    "list_class_folder", "read_file_list", "default_device", "image_folder_train_pipeline",
    "image_folder_val_pipeline", "list_image_folder", "find_undecodable_images", "shard_indices", "list_audio_folder",
    "speech_train_pipeline", "speech_commands_split", "feature_shape", "synthesize_speech_commands",
]
