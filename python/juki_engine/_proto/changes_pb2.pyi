from juki_engine._proto import registry_pb2 as _registry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChangeReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_REASON_UNSPECIFIED: _ClassVar[ChangeReason]
    CHANGE_REASON_BIRTH: _ClassVar[ChangeReason]
    CHANGE_REASON_RETURN_FROM_ABROAD: _ClassVar[ChangeReason]
    CHANGE_REASON_MOVE_OUT: _ClassVar[ChangeReason]
    CHANGE_REASON_MOVE_IN: _ClassVar[ChangeReason]
    CHANGE_REASON_MOVE_WITHIN: _ClassVar[ChangeReason]
    CHANGE_REASON_MOVE_ABROAD: _ClassVar[ChangeReason]
    CHANGE_REASON_DEATH: _ClassVar[ChangeReason]
    CHANGE_REASON_NAME_CHANGE: _ClassVar[ChangeReason]
    CHANGE_REASON_OFFICIAL_ENTRY: _ClassVar[ChangeReason]
    CHANGE_REASON_OFFICIAL_REMOVAL: _ClassVar[ChangeReason]
    CHANGE_REASON_OFFICIAL_CORRECTION: _ClassVar[ChangeReason]
    CHANGE_REASON_RESIDENT_CODE_CHANGE: _ClassVar[ChangeReason]
    CHANGE_REASON_MY_NUMBER_CHANGE: _ClassVar[ChangeReason]
    CHANGE_REASON_CARD_APPLIED: _ClassVar[ChangeReason]
    CHANGE_REASON_CARD_ISSUED: _ClassVar[ChangeReason]
    CHANGE_REASON_CARD_RETURNED: _ClassVar[ChangeReason]
    CHANGE_REASON_CANCEL: _ClassVar[ChangeReason]

class ChangeOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_OUTCOME_UNSPECIFIED: _ClassVar[ChangeOutcome]
    CHANGE_OUTCOME_APPLIED: _ClassVar[ChangeOutcome]
    CHANGE_OUTCOME_DUPLICATE: _ClassVar[ChangeOutcome]
    CHANGE_OUTCOME_REJECTED: _ClassVar[ChangeOutcome]

class Refusal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUSAL_UNSPECIFIED: _ClassVar[Refusal]
    REFUSAL_INVALID: _ClassVar[Refusal]
    REFUSAL_NOT_FOUND: _ClassVar[Refusal]
    REFUSAL_NOT_PERMITTED: _ClassVar[Refusal]
    REFUSAL_CONFLICT: _ClassVar[Refusal]
CHANGE_REASON_UNSPECIFIED: ChangeReason
CHANGE_REASON_BIRTH: ChangeReason
CHANGE_REASON_RETURN_FROM_ABROAD: ChangeReason
CHANGE_REASON_MOVE_OUT: ChangeReason
CHANGE_REASON_MOVE_IN: ChangeReason
CHANGE_REASON_MOVE_WITHIN: ChangeReason
CHANGE_REASON_MOVE_ABROAD: ChangeReason
CHANGE_REASON_DEATH: ChangeReason
CHANGE_REASON_NAME_CHANGE: ChangeReason
CHANGE_REASON_OFFICIAL_ENTRY: ChangeReason
CHANGE_REASON_OFFICIAL_REMOVAL: ChangeReason
CHANGE_REASON_OFFICIAL_CORRECTION: ChangeReason
CHANGE_REASON_RESIDENT_CODE_CHANGE: ChangeReason
CHANGE_REASON_MY_NUMBER_CHANGE: ChangeReason
CHANGE_REASON_CARD_APPLIED: ChangeReason
CHANGE_REASON_CARD_ISSUED: ChangeReason
CHANGE_REASON_CARD_RETURNED: ChangeReason
CHANGE_REASON_CANCEL: ChangeReason
CHANGE_OUTCOME_UNSPECIFIED: ChangeOutcome
CHANGE_OUTCOME_APPLIED: ChangeOutcome
CHANGE_OUTCOME_DUPLICATE: ChangeOutcome
CHANGE_OUTCOME_REJECTED: ChangeOutcome
REFUSAL_UNSPECIFIED: Refusal
REFUSAL_INVALID: Refusal
REFUSAL_NOT_FOUND: Refusal
REFUSAL_NOT_PERMITTED: Refusal
REFUSAL_CONFLICT: Refusal

class Change(_message.Message):
    __slots__ = ("sequence", "reason", "effective_date", "reported_date", "key", "family_name", "family_name_kana", "given_name", "given_name_kana", "birth_date", "sex", "address_town", "address_block", "moving_to", "cancels")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_DATE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_DATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FAMILY_NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    GIVEN_NAME_FIELD_NUMBER: _ClassVar[int]
    GIVEN_NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_TOWN_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_BLOCK_FIELD_NUMBER: _ClassVar[int]
    MOVING_TO_FIELD_NUMBER: _ClassVar[int]
    CANCELS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    reason: ChangeReason
    effective_date: str
    reported_date: str
    key: _registry_pb2.Key
    family_name: str
    family_name_kana: str
    given_name: str
    given_name_kana: str
    birth_date: str
    sex: _registry_pb2.Sex
    address_town: str
    address_block: str
    moving_to: str
    cancels: int
    def __init__(self, sequence: _Optional[int] = ..., reason: _Optional[_Union[ChangeReason, str]] = ..., effective_date: _Optional[str] = ..., reported_date: _Optional[str] = ..., key: _Optional[_Union[_registry_pb2.Key, _Mapping]] = ..., family_name: _Optional[str] = ..., family_name_kana: _Optional[str] = ..., given_name: _Optional[str] = ..., given_name_kana: _Optional[str] = ..., birth_date: _Optional[str] = ..., sex: _Optional[_Union[_registry_pb2.Sex, str]] = ..., address_town: _Optional[str] = ..., address_block: _Optional[str] = ..., moving_to: _Optional[str] = ..., cancels: _Optional[int] = ...) -> None: ...

class Changes(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ...) -> None: ...

class SubmitChangesHeader(_message.Message):
    __slots__ = ("operator_id", "request_id")
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    operator_id: str
    request_id: str
    def __init__(self, operator_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class SubmitChangesRequest(_message.Message):
    __slots__ = ("header", "changes", "table")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    header: SubmitChangesHeader
    changes: Changes
    table: bytes
    def __init__(self, header: _Optional[_Union[SubmitChangesHeader, _Mapping]] = ..., changes: _Optional[_Union[Changes, _Mapping]] = ..., table: _Optional[bytes] = ...) -> None: ...

class ChangeResult(_message.Message):
    __slots__ = ("row", "outcome", "refusal", "error", "resident_code", "my_number")
    ROW_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    row: int
    outcome: ChangeOutcome
    refusal: Refusal
    error: str
    resident_code: str
    my_number: str
    def __init__(self, row: _Optional[int] = ..., outcome: _Optional[_Union[ChangeOutcome, str]] = ..., refusal: _Optional[_Union[Refusal, str]] = ..., error: _Optional[str] = ..., resident_code: _Optional[str] = ..., my_number: _Optional[str] = ...) -> None: ...

class SubmitChangesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ChangeResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ChangeResult, _Mapping]]] = ...) -> None: ...

class StreamNoticesRequest(_message.Message):
    __slots__ = ("operator_id", "after", "follow")
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    operator_id: str
    after: int
    follow: bool
    def __init__(self, operator_id: _Optional[str] = ..., after: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class StreamNoticesResponse(_message.Message):
    __slots__ = ("notice", "kind", "resident", "from_municipality_code", "from_address_town", "from_address_block", "to_municipality_code", "to_municipality_name", "to_address_town", "to_address_block", "effective_date", "reported_date", "recorded_at")
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    FROM_MUNICIPALITY_CODE_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_TOWN_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_BLOCK_FIELD_NUMBER: _ClassVar[int]
    TO_MUNICIPALITY_CODE_FIELD_NUMBER: _ClassVar[int]
    TO_MUNICIPALITY_NAME_FIELD_NUMBER: _ClassVar[int]
    TO_ADDRESS_TOWN_FIELD_NUMBER: _ClassVar[int]
    TO_ADDRESS_BLOCK_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_DATE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_DATE_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    notice: int
    kind: str
    resident: _registry_pb2.Resident
    from_municipality_code: str
    from_address_town: str
    from_address_block: str
    to_municipality_code: str
    to_municipality_name: str
    to_address_town: str
    to_address_block: str
    effective_date: str
    reported_date: str
    recorded_at: str
    def __init__(self, notice: _Optional[int] = ..., kind: _Optional[str] = ..., resident: _Optional[_Union[_registry_pb2.Resident, _Mapping]] = ..., from_municipality_code: _Optional[str] = ..., from_address_town: _Optional[str] = ..., from_address_block: _Optional[str] = ..., to_municipality_code: _Optional[str] = ..., to_municipality_name: _Optional[str] = ..., to_address_town: _Optional[str] = ..., to_address_block: _Optional[str] = ..., effective_date: _Optional[str] = ..., reported_date: _Optional[str] = ..., recorded_at: _Optional[str] = ...) -> None: ...

class AcknowledgeNoticesRequest(_message.Message):
    __slots__ = ("through",)
    THROUGH_FIELD_NUMBER: _ClassVar[int]
    through: int
    def __init__(self, through: _Optional[int] = ...) -> None: ...

class AcknowledgeNoticesResponse(_message.Message):
    __slots__ = ("acknowledged",)
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: int
    def __init__(self, acknowledged: _Optional[int] = ...) -> None: ...

class WatchHeader(_message.Message):
    __slots__ = ("context", "key", "remove")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    context: _registry_pb2.RequestContext
    key: _registry_pb2.KeyKind
    remove: bool
    def __init__(self, context: _Optional[_Union[_registry_pb2.RequestContext, _Mapping]] = ..., key: _Optional[_Union[_registry_pb2.KeyKind, str]] = ..., remove: _Optional[bool] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("header", "keys")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    header: WatchHeader
    keys: bytes
    def __init__(self, header: _Optional[_Union[WatchHeader, _Mapping]] = ..., keys: _Optional[bytes] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("changed", "not_found", "invalid", "watched")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    WATCHED_FIELD_NUMBER: _ClassVar[int]
    changed: int
    not_found: int
    invalid: int
    watched: int
    def __init__(self, changed: _Optional[int] = ..., not_found: _Optional[int] = ..., invalid: _Optional[int] = ..., watched: _Optional[int] = ...) -> None: ...

class StreamChangesRequest(_message.Message):
    __slots__ = ("context", "after", "follow")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    context: _registry_pb2.RequestContext
    after: int
    follow: bool
    def __init__(self, context: _Optional[_Union[_registry_pb2.RequestContext, _Mapping]] = ..., after: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class StreamChangesResponse(_message.Message):
    __slots__ = ("change", "reason", "cancels", "resident", "fields", "effective_date", "reported_date", "recorded_at")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANCELS_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_DATE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_DATE_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    change: int
    reason: str
    cancels: int
    resident: _registry_pb2.Resident
    fields: _containers.RepeatedScalarFieldContainer[str]
    effective_date: str
    reported_date: str
    recorded_at: str
    def __init__(self, change: _Optional[int] = ..., reason: _Optional[str] = ..., cancels: _Optional[int] = ..., resident: _Optional[_Union[_registry_pb2.Resident, _Mapping]] = ..., fields: _Optional[_Iterable[str]] = ..., effective_date: _Optional[str] = ..., reported_date: _Optional[str] = ..., recorded_at: _Optional[str] = ...) -> None: ...

class AcknowledgeChangesRequest(_message.Message):
    __slots__ = ("context", "through")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    THROUGH_FIELD_NUMBER: _ClassVar[int]
    context: _registry_pb2.RequestContext
    through: int
    def __init__(self, context: _Optional[_Union[_registry_pb2.RequestContext, _Mapping]] = ..., through: _Optional[int] = ...) -> None: ...

class AcknowledgeChangesResponse(_message.Message):
    __slots__ = ("acknowledged",)
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: int
    def __init__(self, acknowledged: _Optional[int] = ...) -> None: ...
