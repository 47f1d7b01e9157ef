from juki_engine._proto import registry_pb2 as _registry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetMyRecordRequest(_message.Message):
    __slots__ = ("my_number",)
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    my_number: str
    def __init__(self, my_number: _Optional[str] = ...) -> None: ...

class GetMyRecordResponse(_message.Message):
    __slots__ = ("resident",)
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    resident: _registry_pb2.Resident
    def __init__(self, resident: _Optional[_Union[_registry_pb2.Resident, _Mapping]] = ...) -> None: ...

class ListMyAccessesRequest(_message.Message):
    __slots__ = ("my_number", "since", "until", "page_size", "page_token")
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    my_number: str
    since: str
    until: str
    page_size: int
    page_token: str
    def __init__(self, my_number: _Optional[str] = ..., since: _Optional[str] = ..., until: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Access(_message.Message):
    __slots__ = ("time", "agency", "agency_name", "affair", "affair_title", "legal_basis", "mode", "fields", "outcome")
    TIME_FIELD_NUMBER: _ClassVar[int]
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    AGENCY_NAME_FIELD_NUMBER: _ClassVar[int]
    AFFAIR_FIELD_NUMBER: _ClassVar[int]
    AFFAIR_TITLE_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    time: str
    agency: str
    agency_name: str
    affair: str
    affair_title: str
    legal_basis: str
    mode: str
    fields: _containers.RepeatedScalarFieldContainer[str]
    outcome: str
    def __init__(self, time: _Optional[str] = ..., agency: _Optional[str] = ..., agency_name: _Optional[str] = ..., affair: _Optional[str] = ..., affair_title: _Optional[str] = ..., legal_basis: _Optional[str] = ..., mode: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ..., outcome: _Optional[str] = ...) -> None: ...

class ListMyAccessesResponse(_message.Message):
    __slots__ = ("accesses", "next_page_token")
    ACCESSES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    accesses: _containers.RepeatedCompositeFieldContainer[Access]
    next_page_token: str
    def __init__(self, accesses: _Optional[_Iterable[_Union[Access, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
