"""The base of the heads' typed config blocks (``model.head``, ``model.rpn``, ``model.roi``)."""
from typing import Any, Mapping, Optional, Type, TypeVar, Union

T = TypeVar("T", bound="ConfigBlock")


class ConfigBlock:
    """Mixin of a head's config dataclass: :meth:`of` accepts the block itself, a mapping of its
    fields (a checkpoint's ``model_config``, a test's dict) or None (the defaults)."""

    @classmethod
    def of(cls: Type[T], value: Optional[Union[T, Mapping[str, Any]]]) -> T:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        return cls(**value)
