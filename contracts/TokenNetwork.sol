// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title Payment channels between pairs of participants for one ERC20 token.
/// @notice Rules that the off-chain side relies on:
///  - at most one channel per unordered pair exists at a time (Opened or Closed); a new one
///    can be opened only once the previous one is Settled;
///  - the id of the pair's next channel is
///    keccak256(abi.encode(chainid, this, lowerAddress, higherAddress, pairCounter)),
///    where pairCounter = getPairCounter(a, b) before the open, so a deposit can be sent in the
///    same block as the open;
///  - deposits and withdrawals are monotonic totals: resending the same total reverts instead of
///    moving tokens twice;
///  - settlement pays out exactly what the channel holds and never reverts on a channel whose
///    balance proofs are consistent (amounts are clamped rather than checked).
/// Locked amounts are recorded and emitted but there is no on-chain unlock: at settlement a
/// locked amount stays with its sender. Settle timeouts are counted in blocks.
contract TokenNetwork is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    enum ChannelState {
        NonExistent,
        Opened,
        Closed,
        Settled
    }

    /// participant1 is always the lower address of the pair.
    struct Channel {
        address participant1;
        uint64 settleTimeout;
        ChannelState state;
        address participant2;
        uint64 settleBlock;
        bool closedByParticipant1;
    }

    /// One side of a channel. nonce/transferredAmount/lockedAmount come from the latest balance
    /// proof *signed by this participant* that reached the chain (through close or update).
    struct Participant {
        uint256 deposit;
        uint256 withdrawn;
        uint256 nonce;
        uint256 transferredAmount;
        uint256 lockedAmount;
    }

    struct Pair {
        uint64 counter;
        bool active;
    }

    bytes32 public constant BALANCE_PROOF_TYPEHASH = keccak256(
        "BalanceProof(bytes32 channelId,uint256 nonce,uint256 transferredAmount,uint256 lockedAmount,bytes32 locksRoot)"
    );
    bytes32 public constant WITHDRAW_PROOF_TYPEHASH =
        keccak256("WithdrawProof(bytes32 channelId,address participant,uint256 totalWithdraw,uint256 expiration)");
    bytes32 public constant COOPERATIVE_SETTLE_TYPEHASH = keccak256(
        "CooperativeSettle(bytes32 channelId,address participant1,uint256 participant1Balance,address participant2,uint256 participant2Balance)"
    );

    /// Short enough for dev chains and tests, long enough that a watching node can react.
    uint256 public constant SETTLE_TIMEOUT_MIN = 5;
    /// About 46 days of 2-second blocks: beyond this, funds would be locked unreasonably long.
    uint256 public constant SETTLE_TIMEOUT_MAX = 2_000_000;

    IERC20 public immutable token;

    mapping(bytes32 pairKey => Pair) private _pairs;
    mapping(bytes32 channelId => Channel) private _channels;
    mapping(bytes32 channelId => mapping(address participant => Participant)) private _participants;

    event ChannelOpened(
        bytes32 indexed channelId, address indexed participant1, address indexed participant2, uint256 settleTimeout
    );
    event ChannelNewDeposit(bytes32 indexed channelId, address indexed participant, uint256 totalDeposit);
    event ChannelClosed(
        bytes32 indexed channelId,
        address indexed closingParticipant,
        uint256 nonce,
        uint256 transferredAmount,
        uint256 lockedAmount,
        bytes32 locksRoot,
        uint256 settleBlock
    );
    event NonClosingBalanceProofUpdated(
        bytes32 indexed channelId,
        address indexed closingParticipant,
        uint256 nonce,
        uint256 transferredAmount,
        uint256 lockedAmount,
        bytes32 locksRoot
    );
    event ChannelSettled(
        bytes32 indexed channelId,
        address participant1,
        uint256 participant1Amount,
        address participant2,
        uint256 participant2Amount
    );
    event ChannelCooperativeSettled(
        bytes32 indexed channelId,
        address participant1,
        uint256 participant1Amount,
        address participant2,
        uint256 participant2Amount
    );
    event ChannelWithdrawal(
        bytes32 indexed channelId, address indexed participant, uint256 totalWithdraw, uint256 amount
    );

    error InvalidToken(address token);
    error InvalidPartner(address partner);
    error InvalidSettleTimeout(uint256 settleTimeout, uint256 min, uint256 max);
    error ChannelAlreadyOpen(bytes32 channelId);
    error ChannelNotOpen(bytes32 channelId);
    error ChannelNotClosed(bytes32 channelId);
    error ChannelAlreadySettled(bytes32 channelId);
    error NotParticipant(bytes32 channelId, address account);
    error DepositNotIncreasing(uint256 currentTotal, uint256 requestedTotal);
    error WithdrawNotIncreasing(uint256 currentTotal, uint256 requestedTotal);
    error WithdrawExpired(uint256 expiration, uint256 blockNumber);
    error WithdrawExceedsChannel(uint256 totalWithdrawn, uint256 totalDeposit);
    error InvalidSignature();
    error OnlyNonClosingParticipant(address account);
    error StaleNonce(uint256 currentNonce, uint256 givenNonce);
    error SettleWindowOver(uint256 settleBlock, uint256 blockNumber);
    error SettleTimeoutNotExpired(uint256 settleBlock, uint256 blockNumber);
    error CooperativeSettleMismatch(uint256 channelHolds, uint256 participant1Balance, uint256 participant2Balance);

    constructor(IERC20 token_) EIP712("TokenNetwork", "1") {
        if (address(token_).code.length == 0) revert InvalidToken(address(token_));
        token = token_;
    }

    // ---------------------------------------------------------------- lifecycle

    /// Opens the pair's channel; the caller is one participant. Deposits come separately.
    function openChannel(address partner, uint256 settleTimeout) external returns (bytes32 channelId) {
        if (partner == address(0) || partner == msg.sender) revert InvalidPartner(partner);
        if (settleTimeout < SETTLE_TIMEOUT_MIN || settleTimeout > SETTLE_TIMEOUT_MAX) {
            revert InvalidSettleTimeout(settleTimeout, SETTLE_TIMEOUT_MIN, SETTLE_TIMEOUT_MAX);
        }
        (address p1, address p2) = _ordered(msg.sender, partner);
        Pair storage pair = _pairs[_pairKey(p1, p2)];
        if (pair.active) revert ChannelAlreadyOpen(_channelId(p1, p2, pair.counter - 1));

        channelId = _channelId(p1, p2, pair.counter);
        pair.counter += 1;
        pair.active = true;
        _channels[channelId] = Channel({
            participant1: p1,
            settleTimeout: uint64(settleTimeout),
            state: ChannelState.Opened,
            participant2: p2,
            settleBlock: 0,
            closedByParticipant1: false
        });
        emit ChannelOpened(channelId, p1, p2, settleTimeout);
    }

    /// Raises `participant`'s deposit to `totalDeposit`, pulling the difference from the caller.
    /// Anyone may fund either participant.
    function setTotalDeposit(bytes32 channelId, address participant, uint256 totalDeposit) external nonReentrant {
        Channel storage channel = _channels[channelId];
        if (channel.state != ChannelState.Opened) revert ChannelNotOpen(channelId);
        if (participant != channel.participant1 && participant != channel.participant2) {
            revert NotParticipant(channelId, participant);
        }
        Participant storage side = _participants[channelId][participant];
        uint256 current = side.deposit;
        if (totalDeposit <= current) revert DepositNotIncreasing(current, totalDeposit);

        side.deposit = totalDeposit;
        emit ChannelNewDeposit(channelId, participant, totalDeposit);
        token.safeTransferFrom(msg.sender, address(this), totalDeposit - current);
    }

    /// Pays the caller up to `totalWithdraw` (a total, like deposits) while the channel stays
    /// open, authorised by the partner's signature over WithdrawProof.
    function withdraw(bytes32 channelId, uint256 totalWithdraw, uint256 expiration, bytes calldata partnerSignature)
        external
        nonReentrant
    {
        Channel storage channel = _channels[channelId];
        if (channel.state != ChannelState.Opened) revert ChannelNotOpen(channelId);
        address partner = _partnerOf(channel, channelId, msg.sender);
        if (block.number > expiration) revert WithdrawExpired(expiration, block.number);
        Participant storage side = _participants[channelId][msg.sender];
        uint256 current = side.withdrawn;
        if (totalWithdraw <= current) revert WithdrawNotIncreasing(current, totalWithdraw);

        bytes32 structHash =
            keccak256(abi.encode(WITHDRAW_PROOF_TYPEHASH, channelId, msg.sender, totalWithdraw, expiration));
        if (_recover(structHash, partnerSignature) != partner) revert InvalidSignature();

        Participant storage other = _participants[channelId][partner];
        uint256 totalDeposit = side.deposit + other.deposit;
        uint256 totalWithdrawn = totalWithdraw + other.withdrawn;
        if (totalWithdrawn > totalDeposit) revert WithdrawExceedsChannel(totalWithdrawn, totalDeposit);

        side.withdrawn = totalWithdraw;
        uint256 amount = totalWithdraw - current;
        emit ChannelWithdrawal(channelId, msg.sender, totalWithdraw, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// Closes the channel, submitting the partner's latest balance proof; nonce 0 means "no
    /// proof" (the partner sent nothing) and the signature is then ignored.
    function closeChannel(
        bytes32 channelId,
        uint256 nonce,
        uint256 transferredAmount,
        uint256 lockedAmount,
        bytes32 locksRoot,
        bytes calldata partnerSignature
    ) external {
        Channel storage channel = _channels[channelId];
        if (channel.state != ChannelState.Opened) revert ChannelNotOpen(channelId);
        address partner = _partnerOf(channel, channelId, msg.sender);

        if (nonce != 0) {
            bytes32 structHash = _balanceProofHash(channelId, nonce, transferredAmount, lockedAmount, locksRoot);
            if (_recover(structHash, partnerSignature) != partner) revert InvalidSignature();
            Participant storage side = _participants[channelId][partner];
            side.nonce = nonce;
            side.transferredAmount = transferredAmount;
            side.lockedAmount = lockedAmount;
        }

        uint256 settleBlock = block.number + channel.settleTimeout;
        channel.state = ChannelState.Closed;
        channel.settleBlock = uint64(settleBlock);
        channel.closedByParticipant1 = msg.sender == channel.participant1;
        emit ChannelClosed(channelId, msg.sender, nonce, transferredAmount, lockedAmount, locksRoot, settleBlock);
    }

    /// During the settle window the non-closing participant submits the closer's latest proof.
    function updateNonClosingBalanceProof(
        bytes32 channelId,
        uint256 nonce,
        uint256 transferredAmount,
        uint256 lockedAmount,
        bytes32 locksRoot,
        bytes calldata closingSignature
    ) external {
        Channel storage channel = _channels[channelId];
        if (channel.state != ChannelState.Closed) revert ChannelNotClosed(channelId);
        if (block.number > channel.settleBlock) revert SettleWindowOver(channel.settleBlock, block.number);
        (address closer, address nonCloser) = channel.closedByParticipant1
            ? (channel.participant1, channel.participant2)
            : (channel.participant2, channel.participant1);
        if (msg.sender != nonCloser) revert OnlyNonClosingParticipant(msg.sender);

        Participant storage side = _participants[channelId][closer];
        if (nonce <= side.nonce) revert StaleNonce(side.nonce, nonce);
        bytes32 structHash = _balanceProofHash(channelId, nonce, transferredAmount, lockedAmount, locksRoot);
        if (_recover(structHash, closingSignature) != closer) revert InvalidSignature();

        side.nonce = nonce;
        side.transferredAmount = transferredAmount;
        side.lockedAmount = lockedAmount;
        emit NonClosingBalanceProofUpdated(channelId, closer, nonce, transferredAmount, lockedAmount, locksRoot);
    }

    /// After the settle window anyone may settle; the pair may then open a new channel.
    function settleChannel(bytes32 channelId) external nonReentrant {
        Channel storage channel = _channels[channelId];
        ChannelState state = channel.state;
        if (state == ChannelState.Settled) revert ChannelAlreadySettled(channelId);
        if (state != ChannelState.Closed) revert ChannelNotClosed(channelId);
        if (block.number <= channel.settleBlock) revert SettleTimeoutNotExpired(channel.settleBlock, block.number);

        address p1 = channel.participant1;
        address p2 = channel.participant2;
        Participant storage s1 = _participants[channelId][p1];
        Participant storage s2 = _participants[channelId][p2];
        uint256 holds = _holds(channelId, p1, p2);
        uint256 amount1 =
            _clampedPayout(s1.deposit, s1.withdrawn, s1.transferredAmount, s2.transferredAmount, holds);
        uint256 amount2 = holds - amount1;

        _finish(channel, channelId, p1, p2);
        emit ChannelSettled(channelId, p1, amount1, p2, amount2);
        _payOut(p1, amount1);
        _payOut(p2, amount2);
    }

    /// Settles an open channel at once with balances both participants signed; they must add up
    /// to what the channel holds.
    function cooperativeSettle(
        bytes32 channelId,
        uint256 participant1Balance,
        uint256 participant2Balance,
        bytes calldata participant1Signature,
        bytes calldata participant2Signature
    ) external nonReentrant {
        Channel storage channel = _channels[channelId];
        if (channel.state != ChannelState.Opened) revert ChannelNotOpen(channelId);
        address p1 = channel.participant1;
        address p2 = channel.participant2;
        uint256 holds = _holds(channelId, p1, p2);
        if (participant1Balance > holds || participant2Balance != holds - participant1Balance) {
            revert CooperativeSettleMismatch(holds, participant1Balance, participant2Balance);
        }
        _checkCooperativeSignatures(
            channelId, p1, participant1Balance, p2, participant2Balance, participant1Signature, participant2Signature
        );

        _finish(channel, channelId, p1, p2);
        emit ChannelCooperativeSettled(channelId, p1, participant1Balance, p2, participant2Balance);
        _payOut(p1, participant1Balance);
        _payOut(p2, participant2Balance);
    }

    // ---------------------------------------------------------------- views

    /// The pair's current (Opened or Closed) channel, or zero.
    function getChannelId(address a, address b) external view returns (bytes32) {
        (address p1, address p2) = _ordered(a, b);
        Pair storage pair = _pairs[_pairKey(p1, p2)];
        return pair.active ? _channelId(p1, p2, pair.counter - 1) : bytes32(0);
    }

    /// How many channels the pair has ever opened; the next channel's id uses this value.
    function getPairCounter(address a, address b) external view returns (uint256) {
        (address p1, address p2) = _ordered(a, b);
        return _pairs[_pairKey(p1, p2)].counter;
    }

    function computeChannelId(address a, address b, uint256 counter) external view returns (bytes32) {
        (address p1, address p2) = _ordered(a, b);
        return _channelId(p1, p2, counter);
    }

    function getChannel(bytes32 channelId)
        external
        view
        returns (
            address participant1,
            address participant2,
            ChannelState state,
            uint256 settleTimeout,
            uint256 settleBlock,
            address closingParticipant
        )
    {
        Channel storage channel = _channels[channelId];
        participant1 = channel.participant1;
        participant2 = channel.participant2;
        state = channel.state;
        settleTimeout = channel.settleTimeout;
        settleBlock = channel.settleBlock;
        if (state == ChannelState.Closed || state == ChannelState.Settled) {
            closingParticipant = channel.closedByParticipant1 ? participant1 : participant2;
        }
    }

    function getParticipant(bytes32 channelId, address participant)
        external
        view
        returns (uint256 deposit, uint256 withdrawn, uint256 nonce, uint256 transferredAmount, uint256 lockedAmount)
    {
        Participant storage side = _participants[channelId][participant];
        return (side.deposit, side.withdrawn, side.nonce, side.transferredAmount, side.lockedAmount);
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------- internals

    function _ordered(address a, address b) private pure returns (address, address) {
        return a < b ? (a, b) : (b, a);
    }

    function _pairKey(address p1, address p2) private pure returns (bytes32) {
        return keccak256(abi.encodePacked(p1, p2));
    }

    function _channelId(address p1, address p2, uint256 counter) private view returns (bytes32) {
        return keccak256(abi.encode(block.chainid, address(this), p1, p2, counter));
    }

    function _partnerOf(Channel storage channel, bytes32 channelId, address account) private view returns (address) {
        if (account == channel.participant1) return channel.participant2;
        if (account == channel.participant2) return channel.participant1;
        revert NotParticipant(channelId, account);
    }

    function _balanceProofHash(
        bytes32 channelId,
        uint256 nonce,
        uint256 transferredAmount,
        uint256 lockedAmount,
        bytes32 locksRoot
    ) private pure returns (bytes32) {
        return keccak256(abi.encode(BALANCE_PROOF_TYPEHASH, channelId, nonce, transferredAmount, lockedAmount, locksRoot));
    }

    function _holds(bytes32 channelId, address p1, address p2) private view returns (uint256) {
        Participant storage s1 = _participants[channelId][p1];
        Participant storage s2 = _participants[channelId][p2];
        return s1.deposit + s2.deposit - s1.withdrawn - s2.withdrawn;
    }

    function _checkCooperativeSignatures(
        bytes32 channelId,
        address p1,
        uint256 participant1Balance,
        address p2,
        uint256 participant2Balance,
        bytes calldata participant1Signature,
        bytes calldata participant2Signature
    ) private view {
        bytes32 structHash = keccak256(
            abi.encode(COOPERATIVE_SETTLE_TYPEHASH, channelId, p1, participant1Balance, p2, participant2Balance)
        );
        if (_recover(structHash, participant1Signature) != p1) revert InvalidSignature();
        if (_recover(structHash, participant2Signature) != p2) revert InvalidSignature();
    }

    /// Any malformed signature is reported as InvalidSignature, like a wrong signer.
    function _recover(bytes32 structHash, bytes calldata signature) private view returns (address) {
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(_hashTypedDataV4(structHash), signature);
        if (err != ECDSA.RecoverError.NoError) revert InvalidSignature();
        return signer;
    }

    /// participant1 gets deposit1 - withdrawn1 - transferred1 + transferred2, clamped to
    /// [0, holds]; participant2 gets the rest. Sums saturate instead of overflowing, so no signed
    /// input can make this revert or pay out more than the channel holds. Only absurd proofs
    /// (sums reaching 2^256) saturate, and their split is then arbitrary but still bounded.
    function _clampedPayout(uint256 deposit1, uint256 withdrawn1, uint256 transferred1, uint256 transferred2, uint256 holds)
        private
        pure
        returns (uint256)
    {
        uint256 credit = _saturatingAdd(deposit1, transferred2);
        uint256 debit = _saturatingAdd(withdrawn1, transferred1);
        if (credit <= debit) return 0;
        uint256 net = credit - debit;
        return net < holds ? net : holds;
    }

    function _saturatingAdd(uint256 a, uint256 b) private pure returns (uint256) {
        unchecked {
            uint256 c = a + b;
            return c < a ? type(uint256).max : c;
        }
    }

    function _finish(Channel storage channel, bytes32 channelId, address p1, address p2) private {
        channel.state = ChannelState.Settled;
        _pairs[_pairKey(p1, p2)].active = false;
        delete _participants[channelId][p1];
        delete _participants[channelId][p2];
    }

    function _payOut(address to, uint256 amount) private {
        if (amount != 0) token.safeTransfer(to, amount);
    }
}
