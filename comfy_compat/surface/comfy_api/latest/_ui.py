"""ComfyUI's V3 ui outputs (`comfy_api.latest.ui`): what a node shows, as `io.NodeOutput(..., ui=...)`.

PreviewImage / PreviewMask write PNGs into the temp folder (like ComfyUI's PreviewImage node), ImageSaveHelper saves
into the output folder with the prompt in the PNG text chunks, PreviewText shows a string.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

from comfy_compat.surface import folder_paths
from comfy_compat.surface.comfy_api.latest._io import ComfyNode, FolderType, _UIOutput


class SavedResult(dict):
    """One written file as the ui lists it: {filename, subfolder, type}."""

    def __init__(self, filename: str, subfolder: str, type: FolderType):  # noqa: A002 - ComfyUI's name
        super().__init__(filename=filename, subfolder=subfolder, type=FolderType(type).value)

    @property
    def filename(self) -> str:
        return self["filename"]

    @property
    def subfolder(self) -> str:
        return self["subfolder"]

    @property
    def type(self) -> FolderType:
        return FolderType(self["type"])


class SavedImages(_UIOutput):
    def __init__(self, results: list[SavedResult], is_animated: bool = False):
        self.results = results
        self.is_animated = is_animated

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"images": self.results}
        if self.is_animated:
            data["animated"] = (True,)
        return data


def _directory(folder_type: FolderType) -> str:
    if folder_type == FolderType.input:
        return folder_paths.get_input_directory()
    if folder_type == FolderType.output:
        return folder_paths.get_output_directory()
    return folder_paths.get_temp_directory()


class ImageSaveHelper:
    """Saving IMAGE batches as PNG files, with the prompt and workflow in their text chunks."""

    @staticmethod
    def _convert_tensor_to_pil(image: Any) -> Any:
        import numpy as np
        from PIL import Image as PILImage

        return PILImage.fromarray(np.clip(255.0 * image.detach().float().cpu().numpy(), 0, 255).astype(np.uint8))

    @staticmethod
    def _create_png_metadata(cls: type[ComfyNode] | None) -> Any:
        from PIL.PngImagePlugin import PngInfo

        if cls is None or not cls.hidden:
            return None
        metadata = PngInfo()
        if cls.hidden.prompt:
            metadata.add_text("prompt", json.dumps(cls.hidden.prompt))
        if cls.hidden.extra_pnginfo:
            for key, value in cls.hidden.extra_pnginfo.items():
                metadata.add_text(key, json.dumps(value))
        return metadata

    @staticmethod
    def save_images(images: Any, filename_prefix: str, folder_type: FolderType, cls: type[ComfyNode] | None,
                    compress_level: int = 4) -> list[SavedResult]:
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, _directory(folder_type), images[0].shape[1], images[0].shape[0])
        metadata = ImageSaveHelper._create_png_metadata(cls)
        results = []
        for batch_number, image in enumerate(images):
            name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
            ImageSaveHelper._convert_tensor_to_pil(image).save(os.path.join(folder, name), pnginfo=metadata,
                                                               compress_level=compress_level)
            results.append(SavedResult(name, subfolder, folder_type))
            counter += 1
        return results

    @staticmethod
    def get_save_images_ui(images: Any, filename_prefix: str, cls: type[ComfyNode] | None,
                           compress_level: int = 4) -> SavedImages:
        return SavedImages(ImageSaveHelper.save_images(images, filename_prefix=filename_prefix,
                                                       folder_type=FolderType.output, cls=cls,
                                                       compress_level=compress_level))


class PreviewImage(_UIOutput):
    """An IMAGE batch shown on the node (PNG files in temp/)."""

    def __init__(self, image: Any, animated: bool = False, cls: type[ComfyNode] | None = None, **kwargs: Any):
        prefix = "ComfyUI_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        self.values = ImageSaveHelper.save_images(image, filename_prefix=prefix, folder_type=FolderType.temp,
                                                  cls=cls, compress_level=1)
        self.animated = animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.values, "animated": (self.animated,)}


class PreviewMask(PreviewImage):
    """A MASK batch shown on the node, as grey images."""

    def __init__(self, mask: Any, animated: bool = False, cls: type[ComfyNode] | None = None, **kwargs: Any):
        preview = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(preview, animated, cls, **kwargs)


class PreviewText(_UIOutput):
    """A string shown on the node."""

    def __init__(self, value: str, **kwargs: Any):
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        return {"text": (self.value,)}


__all__ = ["SavedResult", "SavedImages", "ImageSaveHelper", "PreviewImage", "PreviewMask", "PreviewText"]
