"""Record operations of the world generator: create, update and delete per vendor.

For a write dated before `fold_ms` (the start of Stripe's 30-day event window) an operation builds
or changes the plain dict itself, exactly as the world's ``*_put`` helper would (same keys in the
same order, same timestamps): nothing can observe the difference, and it is several times cheaper.
From `fold_ms` on, and whenever the world advances, it calls the ``*_put`` helper, so Stripe emits
its events. Times are integer milliseconds since the history's first day (see `records.Stamps`).
"""
from __future__ import annotations

from typing import Any

from .records import Stamps
from .world import World


class RecordOps:
    """Mixed into the generator's recorder, which sets `world`, `stamps` and `fold_ms`."""

    world: World
    stamps: Stamps
    fold_ms: int  # writes dated before this are made directly, later ones through world.*_put

    def sf_new(self, sobject: str, fields: dict[str, Any], t: int, modified: int | None = None) -> dict:
        """Create a record at `t`; `modified` (before fold_ms) gives it its final state's timestamps."""
        if t < self.fold_ms:
            rec_id = self.world.ids.salesforce(sobject)
            s = self.stamps.sf(t)
            m = s if modified is None else self.stamps.sf(modified)
            rec = {"Id": rec_id, "IsDeleted": False, "CreatedDate": s, **fields, "LastModifiedDate": m,
                   "SystemModstamp": m}
            self.world.salesforce[sobject][rec_id] = rec
            return rec
        return self.world.sf_put(sobject, fields, at=self.stamps.at(t))

    def sf_set(self, sobject: str, rec: dict, fields: dict[str, Any], t: int) -> None:
        if t < self.fold_ms:
            rec.update(fields)
            rec["LastModifiedDate"] = rec["SystemModstamp"] = self.stamps.sf(t)
        elif self.world.salesforce[sobject].get(rec["Id"]) is rec:  # unless an API client deleted it
            self.world.sf_put(sobject, {"Id": rec["Id"], **fields}, at=self.stamps.at(t))

    def sf_remove(self, sobject: str, rec: dict, t: int) -> None:
        if t < self.fold_ms:
            rec["IsDeleted"] = True
            rec["LastModifiedDate"] = rec["SystemModstamp"] = self.stamps.sf(t)
        elif self.world.salesforce[sobject].get(rec["Id"]) is rec:
            self.world.sf_delete(sobject, rec["Id"], at=self.stamps.at(t))

    def hs_new(self, object_type: str, properties: dict[str, Any], t: int, modified: int | None = None) -> dict:
        if t < self.fold_ms:
            rec_id = self.world.ids.hubspot()
            s = self.stamps.hs(t)
            m = s if modified is None else self.stamps.hs(modified)
            props: dict[str, Any] = {"hs_object_id": rec_id, "createdate": s}
            for key, value in properties.items():
                props[key] = None if value is None else str(value)
            props["hs_lastmodifieddate"] = m
            rec = {"id": rec_id, "properties": props, "createdAt": s, "updatedAt": m, "archived": False}
            self.world.hubspot[object_type][rec_id] = rec
            return rec
        return self.world.hs_put(object_type, properties, at=self.stamps.at(t))

    def hs_set(self, object_type: str, rec: dict, properties: dict[str, Any], t: int) -> None:
        if t < self.fold_ms:
            props = rec["properties"]
            for key, value in properties.items():
                props[key] = None if value is None else str(value)
            props["hs_lastmodifieddate"] = rec["updatedAt"] = self.stamps.hs(t)
        elif self.world.hubspot[object_type].get(rec["id"]) is rec:
            self.world.hs_put(object_type, properties, rec["id"], at=self.stamps.at(t))

    def hs_remove(self, object_type: str, rec: dict, t: int) -> None:
        if t < self.fold_ms:
            rec["archived"] = True
            rec["archivedAt"] = rec["updatedAt"] = self.stamps.hs(t)
        elif self.world.hubspot[object_type].get(rec["id"]) is rec:
            self.world.hs_archive(object_type, rec["id"], at=self.stamps.at(t))

    def zd_new(self, kind: str, obj: dict[str, Any], t: int) -> dict:
        if t < self.fold_ms:
            rec_id = self.world.ids.zendesk(kind)
            s = self.stamps.zd(t)
            rec = {"id": rec_id, "created_at": s, **obj, "updated_at": s}
            if kind == "tickets":
                rec["generated_timestamp"] = self.stamps.unix(t)
            self.world.zendesk[kind][rec_id] = rec
            return rec
        return self.world.zd_put(kind, obj, at=self.stamps.at(t))

    def zd_set(self, kind: str, rec: dict, obj: dict[str, Any], t: int) -> None:
        if t < self.fold_ms:
            rec.update(obj)
            rec["updated_at"] = self.stamps.zd(t)
            if kind == "tickets":
                rec["generated_timestamp"] = self.stamps.unix(t)
        elif self.world.zendesk[kind].get(rec["id"]) is rec:
            self.world.zd_put(kind, {"id": rec["id"], **obj}, at=self.stamps.at(t))

    def st_new(self, kind: str, obj_id: str, obj: dict[str, Any], t: int, created: int | None = None) -> dict:
        """Create a Stripe object at `t` (`created`: the same time as an int the caller already has)."""
        if t < self.fold_ms:
            rec = {"id": obj_id, "object": kind, "created": self.stamps.unix(t) if created is None else created,
                   "livemode": False}
            for key, value in obj.items():  # one by one: the dict stays at its smallest size (~460 bytes)
                rec[key] = value
            self.world.stripe[kind][obj_id] = rec
            return rec
        return self.world.stripe_put(kind, {"id": obj_id, **obj}, at=self.stamps.at(t))

    def st_set(self, kind: str, rec: dict, obj: dict[str, Any], t: int, event_type: str | None = None) -> None:
        if t < self.fold_ms:
            rec.update(obj)
        elif self.world.stripe[kind].get(rec["id"]) is rec:
            self.world.stripe_put(kind, {"id": rec["id"], **obj}, event_type=event_type, at=self.stamps.at(t))
