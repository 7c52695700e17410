"""The drop-in: a DALI ImageNet loader written the way NVIDIA's ResNet-50 example writes it,
unchanged except one line (marked), trains one step with the iterator adapter."""
from __future__ import annotations

import numpy as np
import torch
import torchvision
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
from PIL import Image

import dali_multimix
from conftest import sample_photos
from dali_multimix.torch import MultimixIterator, mixed_cross_entropy


@pipeline_def
def create_dali_pipeline(data_dir, crop, size, shard_id, num_shards, dali_cpu=False, is_training=True):
    images, labels = fn.readers.file(file_root=data_dir,
                                     shard_id=shard_id,
                                     num_shards=num_shards,
                                     random_shuffle=is_training,
                                     pad_last_batch=True,
                                     name="Reader")
    dali_device = 'cpu' if dali_cpu else 'gpu'
    decoder_device = 'cpu' if dali_cpu else 'mixed'
    if is_training:
        images = fn.decoders.image_random_crop(images,
                                               device=decoder_device, output_type=types.RGB,
                                               random_aspect_ratio=[0.8, 1.25],
                                               random_area=[0.1, 1.0],
                                               num_attempts=100)
        images = fn.resize(images,
                           device=dali_device,
                           resize_x=crop,
                           resize_y=crop,
                           interp_type=types.INTERP_TRIANGULAR)
        mirror = fn.random.coin_flip(probability=0.5)
    else:
        images = fn.decoders.image(images,
                                   device=decoder_device,
                                   output_type=types.RGB)
        images = fn.resize(images,
                           device=dali_device,
                           size=size,
                           mode="not_smaller",
                           interp_type=types.INTERP_TRIANGULAR)
        mirror = False

    images = fn.crop_mirror_normalize(images.gpu() if not dali_cpu else images,
                                      dtype=types.FLOAT,
                                      output_layout="CHW",
                                      crop=(crop, crop),
                                      mean=[0.485 * 255, 0.456 * 255, 0.406 * 255],
                                      std=[0.229 * 255, 0.224 * 255, 0.225 * 255],
                                      mirror=mirror)
    labels = labels.gpu() if not dali_cpu else labels
    return dali_multimix.add_multimix(images, labels, k=4)  # the one added line (was: return images, labels)


def write_imagenet_style_folder(root):
    for label, photo in enumerate(sample_photos(96)):
        (root / f"n0000{label}").mkdir()
        for j in range(3):
            Image.fromarray(np.roll(photo, 7 * j, axis=0)).save(root / f"n0000{label}" / f"{j}.JPEG")


def test_nvidia_style_loader_trains_one_step_with_the_adapter(tmp_path):
    write_imagenet_style_folder(tmp_path)
    pipe = create_dali_pipeline(batch_size=6, num_threads=2, device_id=None, seed=0,
                                data_dir=str(tmp_path), crop=64, size=72, shard_id=0, num_shards=1,
                                dali_cpu=True, is_training=True)
    pipe.build()
    # the iterator swap: DALIClassificationIterator(pipe, reader_name="Reader") becomes
    loader = MultimixIterator(DALIGenericIterator(pipe, ["images", "labels", "partner_labels", "weights"],
                                                  reader_name="Reader",
                                                  last_batch_policy=LastBatchPolicy.PARTIAL))
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = next(iter(loader))
    assert batch.images.shape == (24, 3, 64, 64) and batch.labels.shape == (24,)
    before = [p.detach().clone() for p in model.parameters()]
    loss = mixed_cross_entropy(model(batch.images), batch.labels, batch.partner_labels, batch.weights)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and loss.item() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
