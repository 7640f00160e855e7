"""Find this patient everywhere: ask every PACS at once, print each study once, say who
failed. Run: python docs/examples/find_everywhere.py PATIENT_ID AET@HOST:PORT ..."""

import sys

import anyio
from pydicom.dataset import Dataset

from dicomio import AE, AssociationPool, Peer, fanout
from dicomio.sop import StudyRootQueryRetrieveInformationModelFind as FIND


async def find_everywhere(patient_id: str, peers: list[Peer]) -> dict[str, Peer]:
    """StudyInstanceUID -> the first peer that has it; prints one line per study."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    query.StudyInstanceUID = query.StudyDate = query.StudyDescription = ""
    ae = AE("FINDALL")
    ae.add_requested_context(FIND)
    found: dict[str, Peer] = {}
    async with AssociationPool(ae, idle_timeout=0) as pool:  # ask once: no reuse
        search = fanout.find(pool, peers, query, FIND, timeout=10, dedupe="StudyInstanceUID")
        async with search as answers:
            async for peer, _status, study in answers:
                if study is not None:
                    found[study.StudyInstanceUID] = peer
                    print(f"{peer}: {study.StudyDate} {study.StudyDescription}")
    for report in search.reports.values():
        if not report.ok:
            print(f"{report.peer}: {report.outcome.value} {report.error or ''}")
    return found


if __name__ == "__main__":
    aet_host_port = [arg.replace("@", ":").split(":") for arg in sys.argv[2:]]
    peers = [Peer(ae_title=a, host=h, port=int(p)) for a, h, p in aet_host_port]
    anyio.run(find_everywhere, sys.argv[1], peers)
